"""The diffusion-vs-AR reproduction study (``diffembed reproduce``): :mod:`.design` (rows,
claims, presets), :mod:`.stages` (the resumable run), :mod:`.analysis` (scores, bootstrap CIs,
verdicts) and :mod:`.report` (figures, ``report.md``, the exported model)."""
