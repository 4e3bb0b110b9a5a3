"""Licence rules of an export: classify each species' terms (free / open / restricted / unknown, with
SPDX and Hugging Face ids), issue the export's licence warnings, and sum them up as the export's licence.

docs/export.md lists the recognised licences; the module docstring of :mod:`tomodata.export` the rules.
"""

from __future__ import annotations

import re
import warnings

# licence classes
FREE, OPEN, RESTRICTED, UNKNOWN = "free", "open", "restricted", "unknown"
_CLEARED = (FREE, OPEN)

# Hugging Face's licence ids for Creative Commons licences (others: "other")
_HF_CC = {
    "by-2.0",
    "by-2.5",
    "by-3.0",
    "by-4.0",
    "by-sa-3.0",
    "by-sa-4.0",
    "by-nc-2.0",
    "by-nc-3.0",
    "by-nc-4.0",
    "by-nd-4.0",
    "by-nc-nd-3.0",
    "by-nc-nd-4.0",
    "by-nc-sa-2.0",
    "by-nc-sa-3.0",
    "by-nc-sa-4.0",
}
# long forms → the short words the patterns match (applied to the lower-cased text, in order)
_LICENCE_WORDS = [
    (r"creative[- _]commons", "cc"),
    (r"open[- _]data[- _]commons", "odc"),
    (r"attribution", "by"),
    (r"non[- _]?commercial", "nc"),
    (r"share[- _]?alike", "sa"),
    (r"no[- _]?deriv(ative)?s?", "nd"),
    (r"open[- _]database[- _]licen[sc]e", "odbl"),
    (r"gnu[- _]lesser[- _]general[- _]public[- _]licen[sc]e,?[- _]*(v(ersion)?[- _]?)?", "lgpl-"),
    (r"gnu[- _]affero[- _]general[- _]public[- _]licen[sc]e,?[- _]*(v(ersion)?[- _]?)?", "agpl-"),
]


# the IGO (intergovernmental organisation) ports of CC 3.0 that the SPDX list names; the others get a LicenseRef
_SPDX_CC_IGO = {"by", "by-sa", "by-nc-nd", "by-nc-sa"}


def _cc_licences() -> list[tuple[str, str, str, str]]:
    """CC BY(-NC)(-SA|-ND) 2.0/2.5/3.0/4.0 and the 3.0 IGO ports: most specific first; "4" means 4.0.

    A version ends where no digit follows (a full stop that ends the sentence is fine: "CC BY 4.0.").
    """
    out = []
    for variant in ("by-nc-sa", "by-nc-nd", "by-nc", "by-sa", "by-nd", "by"):
        prefix = r"\bcc[- _]?" + r"[- _]?".join(variant.split("-")) + r"[- _,]*(v(ersion)?[- _]?)?"
        url = f"https://creativecommons.org/licenses/{variant}/3.0/igo/"
        spdx = f"CC-{variant.upper()}-3.0-IGO"
        out.append(
            (prefix + r"3(\.0)?[- _,]*igo\b", spdx if variant in _SPDX_CC_IGO else "LicenseRef-" + spdx, "other", url)
        )
        for ver in ("4.0", "3.0", "2.5", "2.0"):
            v = ver.replace(".", r"\.") if ver == "2.5" else ver[0] + r"(\.0)?"
            hf = f"cc-{variant}-{ver}" if f"{variant}-{ver}" in _HF_CC else "other"
            out.append(
                (
                    prefix + v + r"(?!\.?\d)",
                    f"CC-{variant.upper()}-{ver}",
                    hf,
                    f"https://creativecommons.org/licenses/{variant}/{ver}/",
                )
            )
    return out


_GNU = "https://www.gnu.org/licenses/"
# (pattern on the normalised lower-cased licence text, SPDX id, Hugging Face id, URL); most specific first.
# A GNU licence without "+"/"or later" is the -only id (SPDX's reading of a bare version).
_OPEN_LICENCES = _cc_licences() + [
    (r"\bcc0\b|cc0[- _]?1", "CC0-1.0", "cc0-1.0", "https://creativecommons.org/publicdomain/zero/1.0/"),
    (r"\bpddl\b", "PDDL-1.0", "pddl", "https://opendatacommons.org/licenses/pddl/1-0/"),
    (r"\bodc[- _]?by\b", "ODC-By-1.0", "odc-by", "https://opendatacommons.org/licenses/by/1-0/"),
    (r"\bodbl\b", "ODbL-1.0", "odbl", "https://opendatacommons.org/licenses/odbl/1-0/"),
    (r"public[- _]?domain", "LicenseRef-PublicDomain", "other", "https://creativecommons.org/publicdomain/mark/1.0/"),
    (r"\bunlicen[sc]e\b", "Unlicense", "unlicense", "https://unlicense.org/"),
    (r"\blgpl[- _]?v?2\.1(\+|[- _]or[- _]later)", "LGPL-2.1-or-later", "lgpl-2.1", _GNU + "old-licenses/lgpl-2.1.html"),
    (r"\blgpl[- _]?v?2\.1", "LGPL-2.1-only", "lgpl-2.1", _GNU + "old-licenses/lgpl-2.1.html"),
    (r"\blgpl[- _]?v?3(\.0)?(\+|[- _]or[- _]later)", "LGPL-3.0-or-later", "lgpl-3.0", _GNU + "lgpl-3.0.html"),
    (r"\blgpl[- _]?v?3\b|\blgpl[- _]?v?3\.0", "LGPL-3.0-only", "lgpl-3.0", _GNU + "lgpl-3.0.html"),
    (r"\bagpl[- _]?v?3(\.0)?(\+|[- _]or[- _]later)", "AGPL-3.0-or-later", "agpl-3.0", _GNU + "agpl-3.0.html"),
    (r"\bagpl[- _]?v?3\b|\bagpl[- _]?v?3\.0", "AGPL-3.0-only", "agpl-3.0", _GNU + "agpl-3.0.html"),
    (
        r"\bgpl[- _]?v?2(\.0)?(\+|[- _]or[- _]later)|gnu general public licen[sc]e,? v(ersion)? ?2(\.0)?,? or later"
        r"|\bgnu gpl[- _]?v?2(\.0)?(\+|[- _]or[- _]later)",
        "GPL-2.0-or-later",
        "gpl-2.0",
        _GNU + "old-licenses/gpl-2.0.html",
    ),
    (
        r"\bgpl[- _]?v?2\b|\bgpl[- _]?v?2\.0|gnu general public licen[sc]e,? v(ersion)? ?2",
        "GPL-2.0-only",
        "gpl-2.0",
        _GNU + "old-licenses/gpl-2.0.html",
    ),
    (
        r"\bgpl[- _]?v?3(\.0)?(\+|[- _]or[- _]later)|gnu general public licen[sc]e,? v(ersion)? ?3(\.0)?,? or later",
        "GPL-3.0-or-later",
        "gpl-3.0",
        _GNU + "gpl-3.0.html",
    ),
    (
        r"\bgpl[- _]?v?3\b|\bgpl[- _]?v?3\.0|gnu general public licen[sc]e,? v(ersion)? ?3",
        "GPL-3.0-only",
        "gpl-3.0",
        _GNU + "gpl-3.0.html",
    ),
    (
        # MIT as a licence, with nothing after it but "licence" or the end of a clause (not "MIT Museum")
        r"\bmit[- _]licen[sc]e\b|^\s*(the )?mit\s*$|licen[sc]ed? under (the )?mit( licen[sc]e)?\s*([.;,)]|$)|"
        r"licen[sc]e:\s*mit\s*([.;,)]|$)|\bexpat licen[sc]e\b|^\s*expat\s*$",
        "MIT",
        "mit",
        "https://opensource.org/license/mit",
    ),
    (
        r"bsd[- _]?3|3[- _]clause bsd|bsd 3-clause",
        "BSD-3-Clause",
        "bsd-3-clause",
        "https://opensource.org/license/bsd-3-clause",
    ),
    (
        r"bsd[- _]?2|2[- _]clause bsd|bsd 2-clause",
        "BSD-2-Clause",
        "bsd-2-clause",
        "https://opensource.org/license/bsd-2-clause",
    ),
    (
        r"apache[- _]?(licen[sc]e[- _,]*)?(v(ersion)?[- _]?)?2",
        "Apache-2.0",
        "apache-2.0",
        "https://www.apache.org/licenses/LICENSE-2.0",
    ),
]
# conditions of an open licence that the card states (by the SPDX id's parts, upper-cased: ODC-By is BY)
_CONDITIONS = [
    ("BY", "attribution: credit the creator, link the licence and say that the data were changed"),
    ("NC", "non-commercial use only"),
    ("ND", "no derivatives: adaptations (the cubes and x-rays are derived from the scan) may not be shared"),
]
ATTRIBUTION = _CONDITIONS[0][1]
NO_DERIVATIVES = _CONDITIONS[2][1]
_CC0 = ("CC0-1.0", "cc0-1.0", "https://creativecommons.org/publicdomain/zero/1.0/")
_RESTRICTED_RE = re.compile(
    r"no[- ]redistribution|not? (be )?(for |to be )?redistribut|do not redistribute|"
    r"redistribution (is )?(not|prohibited|forbidden)|without redistribution|\butct\b|digimorph|"
    r"all rights reserved"
)
# texts that name a licence only to deny it, or grant permission to one person: no open licence
_NOT_A_LICENCE_RE = re.compile(
    r"\b(not|never|no longer|isn't|is not)\b[^.;]{0,40}public[- _]?domain|"
    r"\bno licen[sc]e\b(?! (required|needed|fee))|\bunlicensed\b|"
    r"\bused with (the )?permission\b|(?<!no )permission (is )?required|"
    r"\b(not|never|no longer|isn't|aren't)\b (be )?(licen[sc]ed|released|available|offered) (under|as)\b|"
    r"\bnot (under|cc\b|licen[sc]ed by)|^\s*not\b|licen[sc]e does not apply|does not apply to"
)
# terms added to a named licence that the licence itself does not have: a non-commercial or
# no-derivatives clause beside a licence without -NC / -ND is another licence (unknown)
_ADDED_TERMS = (
    (
        "NC",
        re.compile(
            r"not (available )?for commercial|non[- _]?commercial (use|purposes)? ?only|no commercial|"
            r"commercial use (is )?(not (permitted|allowed)|prohibited|forbidden|requires|needs|only with)|"
            r"not (to be )?used commercially|\b(academic|research|educational|non[- _]?profit|personal)"
            r"( research)? (use|purposes) only|for (academic|research|educational|non[- _]?profit|personal)"
            r"( research)? (use|purposes)? ?only|must not be sold|may not be sold"
        ),
    ),
    (
        "ND",
        re.compile(
            r"no[- _]?deriv|deriv\w* (are |is |may )?(not|never) (be )?(permitted|allowed|shared|distributed)|"
            r"do not modify|no modifications?\b|modifications? (are |is )?not (permitted|allowed)|"
            r"not be (modified|altered|adapted)|no adaptations?\b"
        ),
    ),
)
_PROCEDURAL_LICENCE = "procedural (tomodata.phantoms)"


class RedistributionWarning(UserWarning):
    """A data export of species whose terms do not clear redistribution (explicit ``recipe_only=False``)."""


class NotFinalisedWarning(UserWarning):
    """An export of a store that records no completion (``tomo finalize`` not run)."""


class UnknownLicenceWarning(UserWarning):
    """A species' licence text matches no recognised licence (it is treated as not cleared)."""


class AttributionWarning(UserWarning):
    """A data export of a species whose licence asks for credit (CC BY, ODC-By) without an
    ``attribution`` (the manifest's column): the card can only quote the licence text."""


def classify_licence(entry: dict) -> dict:
    """Classify a species' terms from its table entry (``licence`` or ``license``, and ``source``).

    Returns ``{"class": "free" | "open" | "restricted" | "unknown", "spdx": id or None,
    "hf": Hugging Face licence id or None, "url": licence URL or None, "text": the licence text,
    "attribution": the entry's credit line ("" where none), "redistribution": bool, "conditions":
    [...]}`` (open licences' conditions, :data:`_CONDITIONS`: "attribution: ..." for CC BY and ODC-By,
    "non-commercial use only", "no derivatives: ..."). Restricted wins over everything (a licence that forbids
    redistribution or reserves all rights, UTCT/DigiMorph named in it, or a digimorph.org source); then
    procedural species (free, CC0-1.0); a text that denies a licence ("not in the public domain",
    "no licence", "not licensed under …") or names one person's permission ("used with permission")
    is unknown; then a recognised open licence, unknown where the text adds a non-commercial or
    no-derivatives clause the licence does not have (MIT only as a licence: "MIT License", "licensed under MIT", a bare
    "MIT", not "MIT Press"); else unknown (treated as not cleared). The text
    is lower-cased and long forms shortened ("Creative Commons Attribution-NonCommercial" → "cc
    by-nc") before matching; docs/export.md lists what is recognised.
    """
    text = str(entry.get("licence") or entry.get("license") or "").strip()
    source = str(entry.get("source") or "").strip()
    low, src = text.lower(), source.lower()
    credit = " ".join(str(entry.get("attribution") or "").split())
    out = {"text": text, "spdx": None, "hf": None, "url": None, "attribution": credit}
    if _RESTRICTED_RE.search(low) or "digimorph.org" in src:
        return out | {
            "class": RESTRICTED,
            "redistribution": False,
            "label": text or "source under digimorph.org: no redistribution",
        }
    if _PROCEDURAL_LICENCE in low or src.startswith("tomodata.phantoms"):
        spdx, hf, url = _CC0
        label = text or "CC0-1.0 (procedural species, tomodata.phantoms)"
        return out | {"class": FREE, "spdx": spdx, "hf": hf, "url": url, "redistribution": True, "label": label}
    if _NOT_A_LICENCE_RE.search(low):
        return out | {"class": UNKNOWN, "redistribution": False, "label": text}
    norm = low
    for long, short in _LICENCE_WORDS:
        norm = re.sub(long, short, norm)
    for pattern, spdx, hf, url in _OPEN_LICENCES:
        if re.search(pattern, norm):
            added = [tag for tag, rx in _ADDED_TERMS if rx.search(low) and tag not in spdx.upper().split("-")]
            if added:  # e.g. "CC BY-SA 4.0 (not for commercial use)": not CC BY-SA 4.0's terms
                return out | {"class": UNKNOWN, "redistribution": False, "label": text}
            return out | {
                "class": OPEN,
                "spdx": spdx,
                "hf": hf,
                "url": url,
                "redistribution": True,
                "label": text,
                "conditions": [c for tag, c in _CONDITIONS if tag in spdx.upper().split("-")],
            }
    return out | {"class": UNKNOWN, "redistribution": False, "label": text or "(no licence given)"}


def _licence_notes(classes: dict[str, dict], recipe_only: bool | None) -> tuple[bool, list[str]]:
    """The export's mode and its licence warnings (also issued as Python warnings, so on stderr): an
    unknown licence (UnknownLicenceWarning); data of species not cleared, or under a no-derivatives
    licence (RedistributionWarning); data of species whose licence asks for credit without an
    attribution (AttributionWarning)."""
    stack = 3  # the caller of export_dataset
    notes = [
        f"species {n}: licence {c['label']!r} is not a recognised licence (docs/export.md lists them): "
        "treated as not cleared for redistribution, so the export is recipe-only unless recipe_only=False "
        "(tomo export --with-data)"
        for n, c in classes.items()
        if c["class"] == UNKNOWN
    ]
    for note in notes:
        warnings.warn(note, UnknownLicenceWarning, stacklevel=stack)
    blocked = [n for n, c in classes.items() if c["class"] not in _CLEARED]
    recipe_only = bool(blocked) if recipe_only is None else bool(recipe_only)
    loud = []
    if not recipe_only and blocked:
        loud.append(
            "exporting the data of species whose terms do not clear redistribution: "
            + ", ".join(f"{n} ({classes[n]['class']}: {classes[n]['label']})" for n in blocked)
            + ". The export is marked NOT FOR REDISTRIBUTION; do not publish it."
        )
    if not recipe_only:
        loud += [
            f"species {n}: licence {c['spdx']} forbids sharing adaptations, and the export holds data derived "
            "from its scan: check the terms before publishing"
            for n, c in classes.items()
            if any(cond.startswith("no derivatives") for cond in c.get("conditions") or [])
        ]
    for msg in loud:
        warnings.warn(msg, RedistributionWarning, stacklevel=stack)
    uncredited = [] if recipe_only else _uncredited(classes)
    for msg in uncredited:
        warnings.warn(msg, AttributionWarning, stacklevel=stack)
    return recipe_only, notes + loud + uncredited


def _uncredited(classes: dict[str, dict]) -> list[str]:
    """One note per species whose licence asks for credit and whose table entry names none."""
    return [
        f"species {n}: licence {c['spdx']} asks to credit the creator, and the store's table gives no "
        "attribution for it (the manifest's attribution column): the card can only quote the licence text; "
        "add the credit to the manifest and rerun the workflow (tomo store-create) before publishing"
        for n, c in classes.items()
        if ATTRIBUTION in (c.get("conditions") or []) and not c.get("attribution")
    ]


def _licence_summary(table: list[dict], classes: dict[str, dict], recipe_only: bool) -> dict:
    """The export's licence: Hugging Face id, Croissant licence list, prose, flags."""
    blocked = [n for n, c in classes.items() if c["class"] not in _CLEARED]
    restricted = [n for n, c in classes.items() if c["class"] == RESTRICTED]
    spdx = sorted({c["spdx"] for c in classes.values() if c["spdx"]})
    texts = sorted({c["label"] for c in classes.values() if c["class"] not in _CLEARED})
    cc0_spdx, cc0_hf, cc0_url = _CC0
    if recipe_only:
        not_for_redistribution = False
        if blocked:
            hf = "other"
            name = "recipe-only: CC0-1.0 recipe, source data under their own terms"
            cr = (
                [cc0_url]
                + [f"Source data (not included): {t}" for t in texts]
                + (
                    ["Source data without a recognised licence (not included): terms unknown"]
                    if any(classes[n]["class"] == UNKNOWN for n in blocked)
                    else []
                )
            )
        else:
            hf, name = cc0_hf, None
            cr = [cc0_url] + sorted({c["url"] for c in classes.values()} - {cc0_url})
    else:
        not_for_redistribution = bool(blocked)
        if blocked:
            hf = "other"
            name = "NOT FOR REDISTRIBUTION: includes data whose terms do not permit redistribution"
            cr = ["NOT FOR REDISTRIBUTION"] + texts + sorted({c["url"] for c in classes.values() if c["url"]})
        elif len(spdx) == 1:
            c0 = next(iter(classes.values()))
            hf, name, cr = c0["hf"], None, [c0["url"]]
            if hf == "other":  # no Hugging Face id (public domain, some CC versions): the card names it
                name = f"{c0['spdx']} ({c0['url']})"
        else:
            hf = "other"
            name = "mixed open licences: " + ", ".join(spdx)
            cr = sorted({c["url"] for c in classes.values()})
    return {
        "hf": hf,
        "name": name,
        "croissant": cr,
        "not_for_redistribution": not_for_redistribution,
        "blocked": blocked,
        "restricted": restricted,
        "spdx": spdx,
    }
