"""Layer 2, the samplers: one module per sampler (`classic`: DDIM, Euler, DPM-Solver++, flow Euler; `pndm`,
`unipc`, `heun`, `deis`), each registered by one line in `registry`; noise schedules read from diffusers
schedulers (`schedule`), the shared update and the stepper interface (`update`), and the sampling loop
(`sampling`) that reproduces diffusers' pipelines. Every inversion method reuses these steps. Imports
`diffinv.models` and `diffinv.utils`."""
