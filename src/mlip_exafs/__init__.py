"""mlip-exafs: is this universal ML potential right for my material?

The package is the pipeline: label -> finetune -> validate -> md -> analysis ->
exafs -> compare -> report, orchestrated by ``study``.
"""

__version__ = "0.1.0"
