"""Surfaces: the benchmark harness. One module per benchmark (sampler inversion, reconstruction, decoder
inversion, watermark), `tables` for the shared text/JSON output, `images` for the benchmark inputs. May
import every layer below (applications, pipeline, decoder, inversion, sampler, models, utils)."""
