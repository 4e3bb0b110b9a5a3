"""model: the 2D->3D network, training, fusion and inference."""
