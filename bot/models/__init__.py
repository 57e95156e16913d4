"""The tier family at run time: what was exported and how it is served.

`manifest` (manifest.json as typed structs), `family` (the loaded family: every tier's session, routes,
vol calibration), `tier` (one tier: its spec, session and runtime), `forward` and `onnxgraph` (the compiled
forward pass built from an ONNX file's own weights), `store` (versions on disk, the atomic `current`,
prune) and `reload` (a verified hot reload at a bar boundary).
"""
