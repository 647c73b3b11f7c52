"""What every kface trainer shares: the Accelerator and logging set-up, loaders and step arithmetic (``setup``),
the checkpoint policy (``checkpoints``: cadence, rotation, best weights, resume), what the loop watches
(``monitor``) and the end-of-run replica check (``distributed``). Model-specific recipes live with their
model (kface.oracle.recipe, kface.diffusion.training)."""
