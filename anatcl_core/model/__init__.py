"""The network and its trained weights: 3D ResNet, projection head, upstream's ``AnatCL`` class,
checkpoints (the safe reader), the released-weights registry.

May import: the foundations (``anatcl_core.config``, ``atomic``, ``project``, ``cores``) and
``anatcl_core.data``. Nothing here knows how a model was trained.
"""
