"""Generated models: small image classifiers whose architecture is data.

A generated model is a :class:`~fuzzconv.gen.spec.GenSpec`: an input size, a chain of layers from
the vocabulary (:mod:`.vocabulary`, with skip connections by reference to an earlier tensor) and
a classifier head. Its name, ``gen:keras:<id>`` or ``gen:torch:<id>``, is a digest of its
canonical JSON, so the name says exactly which model it is; :mod:`.catalog` resolves names to
specs (in this process, then in the stores a session opened), and :func:`fuzzconv.zoo.get_model`
resolves them everywhere a zoo name is taken.

The pieces:

* :mod:`.vocabulary` — the layer kinds, their attributes (plainest value first), the shapes they
  make, what they weigh and cost, and which conversion steps cannot carry them;
* :mod:`.spec` — the spec as a value: canonical JSON, digest, validation against the vocabulary,
  shapes, simplicity;
* :mod:`.keras_source`, :mod:`.torch_source` — the model as source code in its framework. The
  builders in the workers execute that code, and a bug bundle ships it, so the model is written
  once;
* :mod:`.draw` and :mod:`.mutate` — drawing a spec from a ``choose(options)`` callable (seeded in
  the hunt, Hypothesis in :func:`fuzzconv.strategies.models`) and changing one;
* :mod:`.hunt` — what a ``gen:keras`` / ``gen:torch`` hunt draws next.

Nothing here imports a framework, and this package imports nothing at all on its own, so the zoo
can resolve names without loading the rest.
"""
