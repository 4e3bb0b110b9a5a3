// Explorer of held-out samples: four niivue viewers (ours, ground truth, NN, Oracle) with a shared
// orbit, clip plane, transfer-function preset and red-cyan anaglyph, plus each volume's x-ray
// re-rendered here from the current view: 1 - exp(-chi * mean of the densities along the view
// direction), trilinear samples, parallel beam (model/explorer.py explains the volumes' axes).
// Data: window.EXPLORER (manifest.js); window.EXPLORER_DATA[i] (samples/sNNN.js, loaded on demand).
"use strict";
(function () {
  const M = window.EXPLORER;
  const METHODS = ["ours", "truth", "nn", "oracle"];
  const STEREO_DEG = 3; // half the angle between the eyes' views
  const PRESETS = { // window in fractions of the sample's density range; niivue's matcap shading
    iso: { colormap: "bone", lo: 0.25, hi: 0.35, illumination: 0.6 },
    xray: { colormap: "gray", lo: 0.0, hi: 0.6, illumination: 0.0 },
    colour: { colormap: "plasma", lo: 0.05, hi: 0.8, illumination: 0.5 },
  };
  const state = { index: -1, azimuth: 30, elevation: 15, clip: false, clipDepth: 0, clipAzimuth: 0,
    clipElevation: 0, preset: "xray", stereo: false };
  const viewers = {}; // method -> {nv, cell, vol (decoded NIfTI) or null}
  const $ = (id) => document.getElementById(id);

  function showError(msg) {
    const e = $("error");
    e.textContent = msg;
    e.hidden = false;
    console.error(msg);
  }

  // --- NIfTI-1 (uint8) as written by model/explorer.py: header fields and the voxels -----------
  function decodeNifti(b64) {
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const dv = new DataView(bytes.buffer);
    const dim = [1, 2, 3].map((k) => dv.getInt16(40 + 2 * k, true));
    const pix = [1, 2, 3].map((k) => dv.getFloat32(76 + 4 * k, true));
    const offset = dv.getFloat32(108, true);
    const slope = dv.getFloat32(112, true) || 1;
    return { data: bytes.subarray(offset), dim, pix, slope };
  }

  // --- the x-ray from the current view --------------------------------------------------------
  // niivue's model matrix: mirror(x) . rotX(270 - elevation) . rotZ(azimuth - 180) (orthographic);
  // a detector pixel (u, v) and depth t in view space map to world = inverse(R) . (u, v, t).
  function viewToWorld(az, el) {
    const a = ((az - 180) * Math.PI) / 180, b = ((270 - el) * Math.PI) / 180;
    const ca = Math.cos(a), sa = Math.sin(a), cb = Math.cos(b), sb = Math.sin(b);
    const Rz = [[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]];
    const Rx = [[1, 0, 0], [0, cb, -sb], [0, sb, cb]];
    const mul = (A, B) => A.map((r) => [0, 1, 2].map((j) => r[0] * B[0][j] + r[1] * B[1][j] + r[2] * B[2][j]));
    const R = mul([[-1, 0, 0], [0, 1, 0], [0, 0, 1]], mul(Rx, Rz));
    return [0, 1, 2].map((i) => [0, 1, 2].map((j) => R[j][i])); // rotations: inverse = transpose
  }

  const EDGE = 1e-9; // voxels: a point on the outer face (e.g. -1e-16 from rounding in R) is inside
  function sample(vol, x, y, z) { // trilinear, voxel coordinates; 0 outside
    const [nx, ny, nz] = vol.dim;
    if (x < -EDGE || y < -EDGE || z < -EDGE || x > nx - 1 + EDGE || y > ny - 1 + EDGE || z > nz - 1 + EDGE) return 0;
    x = Math.min(Math.max(x, 0), nx - 1); y = Math.min(Math.max(y, 0), ny - 1); z = Math.min(Math.max(z, 0), nz - 1);
    const i = Math.min(Math.floor(x), nx - 2), j = Math.min(Math.floor(y), ny - 2), k = Math.min(Math.floor(z), nz - 2);
    const fx = x - i, fy = y - j, fz = z - k, d = vol.data, sy = nx, sz = nx * ny;
    const o = i + j * sy + k * sz;
    const c00 = d[o] * (1 - fx) + d[o + 1] * fx, c10 = d[o + sy] * (1 - fx) + d[o + sy + 1] * fx;
    const c01 = d[o + sz] * (1 - fx) + d[o + sz + 1] * fx, c11 = d[o + sz + sy] * (1 - fx) + d[o + sz + sy + 1] * fx;
    return (c00 * (1 - fy) + c10 * fy) * (1 - fz) + (c01 * (1 - fy) + c11 * fy) * fz;
  }

  // opacity (N x N, row-major, rows down) of vol seen from (az, el): N = lateral size, D steps
  function xray(vol, az, el) {
    const [nx, ny] = vol.dim, [px, py, pz] = vol.pix;
    const N = nx, steps = ny, L = nx * px, R = viewToWorld(az, el);
    const out = new Float32Array(N * N);
    const k = M.chi * vol.slope / steps;
    for (let r = 0; r < N; r++) {
      const v = L / 2 - ((r + 0.5) * L) / N;
      for (let c = 0; c < N; c++) {
        const u = -L / 2 + ((c + 0.5) * L) / N;
        let sum = 0;
        for (let s = 0; s < steps; s++) {
          const t = -L / 2 + ((s + 0.5) * L) / steps;
          const wx = R[0][0] * u + R[0][1] * v + R[0][2] * t;
          const wy = R[1][0] * u + R[1][1] * v + R[1][2] * t;
          const wz = R[2][0] * u + R[2][1] * v + R[2][2] * t;
          sum += sample(vol, wx / px + (vol.dim[0] - 1) / 2, wy / py + (vol.dim[1] - 1) / 2, wz / pz + (vol.dim[2] - 1) / 2);
        }
        out[r * N + c] = 1 - Math.exp(-k * sum);
      }
    }
    return { N, opacity: out };
  }

  function drawXray(v) {
    const canvas = v.cell.querySelector("canvas.xray"), ctx = canvas.getContext("2d");
    if (!v.vol) { ctx.clearRect(0, 0, canvas.width, canvas.height); return; }
    const { N, opacity } = xray(v.vol, state.azimuth, state.elevation);
    canvas.width = canvas.height = N;
    const img = ctx.createImageData(N, N);
    for (let p = 0; p < N * N; p++) {
      const g = Math.round(255 * Math.min(1, Math.max(0, opacity[p])));
      img.data.set([g, g, g, 255], 4 * p);
    }
    ctx.putImageData(img, 0, 0);
    v.xray = opacity;
  }

  // --- niivue: view, clip, preset, anaglyph ---------------------------------------------------
  function drawStereo(v) {
    const overlay = v.cell.querySelector("canvas.anaglyph");
    overlay.hidden = !state.stereo || !v.vol;
    if (overlay.hidden) return;
    const nv = v.nv, gl = nv.canvas, w = gl.width, h = gl.height;
    overlay.width = w; overlay.height = h;
    const eye = (deg) => { // a view drawn and copied within one task: the drawing buffer is still there
      nv.scene.renderAzimuth = state.azimuth + deg;
      nv.drawScene();
      const c = document.createElement("canvas");
      c.width = w; c.height = h;
      const ctx = c.getContext("2d");
      ctx.drawImage(gl, 0, 0);
      return ctx.getImageData(0, 0, w, h);
    };
    // niivue's azimuth turns the camera the other way round the volume than the eyes' order suggests:
    // +STEREO_DEG is the left eye's view (near parts in crossed disparity, as occlusion shows them)
    const left = eye(STEREO_DEG), right = eye(-STEREO_DEG);
    nv.scene.renderAzimuth = state.azimuth;
    const grey = (d, p) => 0.299 * d[p] + 0.587 * d[p + 1] + 0.114 * d[p + 2];
    for (let p = 0; p < right.data.length; p += 4) { // red: left eye; green and blue: right eye
      const l = grey(left.data, p), r = grey(right.data, p);
      right.data[p] = l; right.data[p + 1] = r; right.data[p + 2] = r; right.data[p + 3] = 255;
    }
    overlay.getContext("2d").putImageData(right, 0, 0);
  }

  function redraw() {
    for (const m of METHODS) {
      const v = viewers[m];
      v.nv.scene.renderAzimuth = state.azimuth;
      v.nv.scene.renderElevation = state.elevation;
      v.nv.setClipPlane(state.clip ? [state.clipDepth, state.clipAzimuth, state.clipElevation] : [2, 0, 0]);
      v.nv.drawScene();
      drawStereo(v);
    }
  }

  let pendingXray = 0;
  function redrawXrays() { // at most once per frame while orbiting
    if (pendingXray) return;
    pendingXray = requestAnimationFrame(() => {
      pendingXray = 0;
      for (const m of METHODS) drawXray(viewers[m]);
    });
  }

  function setView(az, el, from) {
    state.azimuth = ((Math.round(az) % 360) + 360) % 360;
    state.elevation = Math.max(-89, Math.min(89, Math.round(el)));
    $("azimuth").value = state.azimuth; $("elevation").value = state.elevation;
    syncOutputs();
    for (const m of METHODS) {
      if (m === from && !state.stereo) continue; // niivue has drawn the dragged viewer
      const nv = viewers[m].nv;
      nv.scene.renderAzimuth = state.azimuth;
      nv.scene.renderElevation = state.elevation;
      nv.drawScene();
      drawStereo(viewers[m]);
    }
    redrawXrays();
  }

  async function applyPreset(v) {
    const img = v.nv.volumes[0];
    if (!img) return;
    const p = PRESETS[state.preset], vmax = M.samples[state.index].vmax;
    img.colormap = p.colormap;
    img.cal_min = p.lo * vmax;
    img.cal_max = p.hi * vmax;
    await v.nv.setVolumeRenderIllumination(p.illumination);
    v.nv.updateGLVolume();
  }

  // --- samples ------------------------------------------------------------------------------
  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = src;
      s.onload = resolve;
      s.onerror = () => reject(new Error(`${src} could not be loaded: re-run tomo explorer on this run`));
      document.head.appendChild(s);
    });
  }

  function fmt(x) { return Number.isFinite(x) ? x.toPrecision(3) : "–"; }

  // loads run one after another, and a load asked for while another runs is skipped when a later one
  // was asked for since: the page ends on the last click, every viewer on the same sample
  let loading = Promise.resolve(), wanted = -1;
  function load(i) {
    wanted = i;
    loading = loading.catch(() => {}).then(() => (wanted === i ? show(i) : undefined));
    return loading;
  }

  async function show(i) {
    const S = M.samples[i];
    document.body.dataset.loading = String(i);
    if (!(window.EXPLORER_DATA && window.EXPLORER_DATA[i])) await loadScript(S.script);
    const data = window.EXPLORER_DATA[i];
    delete window.EXPLORER_DATA[i]; // the decoded copies below are all that is kept
    state.index = i;
    $("xray").src = S.xray;
    $("title").textContent = `${S.title} (sample ${i + 1} of ${M.samples.length})`;
    document.querySelectorAll("#samples button").forEach((b, k) => b.classList.toggle("active", k === i));
    for (const m of METHODS) {
      const v = viewers[m];
      while (v.nv.volumes.length) v.nv.removeVolume(v.nv.volumes[0]);
      const b64 = data.volumes[m];
      v.cell.classList.toggle("missing", !b64);
      const met = S.metrics[m];
      v.cell.querySelector(".metrics").textContent = !b64 ? "not in this evaluation"
        : met ? `MSE ${fmt(met.mse)}, DSSIM ${fmt(met.dssim)} (this sample, eval/metrics.csv)` : "";
      v.vol = b64 ? decodeNifti(b64) : null;
      if (b64) {
        const img = await niivue.NVImage.loadFromBase64({ base64: b64, name: `${m}.nii`, colormap: "gray" });
        v.nv.addVolume(img);
        await applyPreset(v);
      }
    }
    redraw();
    redrawXrays();
    document.body.dataset.loaded = String(i);
  }

  function syncOutputs() {
    document.querySelectorAll("output").forEach((o) => { o.value = $(o.htmlFor.value).value; });
  }

  function controls() {
    $("azimuth").addEventListener("input", (e) => setView(+e.target.value, state.elevation));
    $("elevation").addEventListener("input", (e) => setView(state.azimuth, +e.target.value));
    $("front").addEventListener("click", () => setView(0, 0));
    const clip = () => {
      state.clip = $("clip").checked;
      state.clipDepth = +$("clipDepth").value;
      state.clipAzimuth = +$("clipAzimuth").value;
      state.clipElevation = +$("clipElevation").value;
      syncOutputs();
      redraw();
    };
    for (const id of ["clip", "clipDepth", "clipAzimuth", "clipElevation"]) $(id).addEventListener("input", clip);
    document.querySelectorAll("input[name=preset]").forEach((r) => r.addEventListener("change", async (e) => {
      state.preset = e.target.value;
      for (const m of METHODS) await applyPreset(viewers[m]);
      redraw();
    }));
    $("stereo").addEventListener("change", (e) => { state.stereo = e.target.checked; redraw(); });
  }

  async function setup() {
    if (!M) { showError("manifest.js is missing: re-run tomo explorer on this run"); return; }
    if (!window.niivue) { showError("niivue.umd.js is missing: re-run tomo explorer on this run"); return; }
    $("info").textContent = `run ${M.run}: ${M.samples.length} of ${M.n_evaluated} evaluated held-out samples; `
      + `volumes ${M.shown.join("×")} (depth × rows × columns), χ = ${M.chi}`;
    if (M.note) { $("note").textContent = M.note; $("note").hidden = false; }
    M.samples.forEach((S, i) => {
      const b = document.createElement("button");
      b.type = "button";
      b.innerHTML = `<img alt=""><span></span>`;
      b.querySelector("img").src = S.xray;
      b.querySelector("span").textContent = S.title;
      b.addEventListener("click", () => load(i).catch((e) => showError(String(e.message || e))));
      $("samples").appendChild(b);
    });
    for (const m of METHODS) {
      const cell = $("cell").content.firstElementChild.cloneNode(true);
      cell.querySelector("h2").textContent = M.labels[m];
      cell.dataset.method = m;
      $("grid").appendChild(cell);
      const nv = new niivue.Niivue({ backColor: [0, 0, 0, 1], show3Dcrosshair: false, loadingText: "",
        logLevel: "warn", dragAndDropEnabled: false, isOrientationTextVisible: false });
      await nv.attachToCanvas(cell.querySelector("canvas.gl"));
      nv.setSliceType(nv.sliceTypeRender);
      nv.setScale(1.3); // the cube fills the canvas at every azimuth
      nv.setClipPlaneColor([0.3, 0.3, 0.3, 0.1]); // the cut face: a faint grey
      nv.onAzimuthElevationChange = (az, el) => setView(az, el, m);
      viewers[m] = { nv, cell, vol: null };
    }
    controls();
    setView(state.azimuth, state.elevation);
    await load(0);
  }

  window.explorer = { state, viewers, load, setView, redraw, xray, METHODS };
  setup().catch((e) => showError(`explorer: ${e.message || e}`));
})();
