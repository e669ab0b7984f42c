"""The bundled model's training code (data, autoencoder and UNet stages, export, evaluation): `python -m
diffinv_train` from the repository root, or `bash scripts/train_tiny.sh`. It lives beside the package, not in
it, so `pip install diffinv` does not carry it; it imports the installed diffinv (scenes, probe) like any user."""
