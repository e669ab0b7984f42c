"""Helpers every layer shares: image conversion and loading, metrics (NMSE, PSNR, SSIM), cost
measurement (seconds, peak memory), option-spec parsing and atomic output files. Imports nothing
else from diffinv."""
