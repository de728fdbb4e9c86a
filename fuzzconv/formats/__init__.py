"""Artifact formats and input layout: what the files between steps are and how they are read.

A pipeline passes artifacts along as files in the cache. The formats that are fuzzconv's own live
here, beside the input-layout convention every step and runtime follows:

- :mod:`.layout`: NHWC/NCHW, the layout an ONNX model or an artifact directory records, and the
  one transpose between them;
- :mod:`.relax`: a TVM Relax module as TVMScript text plus its constants (``module.json``);
- :mod:`.torch`: a PyTorch module as a JSON manifest beside its weights or its ONNX graph
  (``model.torch.json``), never a pickle.

Steps (:mod:`fuzzconv.steps`), plugins' transforms, the shrinker and bug bundles read and write
artifacts only through these, and the frameworks are imported inside the functions, so the
orchestrator can import this package without loading any of them.
"""
