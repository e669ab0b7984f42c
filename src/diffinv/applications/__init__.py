"""Layer 6, the applications built on inversion: Tree-Ring watermark keys, embedding and detection
(`watermark`), and the image attacks of the Tree-Ring paper (`attacks`). Imports the end-to-end
module `diffinv.pipeline` and every layer below it."""
