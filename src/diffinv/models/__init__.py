"""Layer 1, the models: thin adapters around what diffusers loads. Loading (`load`), the guided noise
predictor (`Denoiser`), the autoencoder with its scaling factor (`Autoencoder`), what a prediction means
at a noise level (`prediction`), the local tokenizer and tiny random-weight test pipelines. Imports
only `diffinv.utils`."""
