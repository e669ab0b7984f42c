"""Surfaces: the bundled model's training package (data, autoencoder and UNet stages, export, evaluation,
invertibility probe); `python -m diffinv.train`. May import every layer below the surfaces."""
