"""Layer 2, the samplers: noise schedules read from diffusers schedulers (`schedule`), each sampler's
one-step update written once (`solvers`), and the sampling loop (`sampling`) that reproduces diffusers'
pipelines. Every inversion method reuses these steps. Imports `diffinv.models` and `diffinv.utils`."""
