"""JAX/Equinox backend of the π-family robot policies (π0, π0.5).

Importing this package is cheap: jax and equinox load only when a model is
built (:mod:`openpi_backend_jax.backend`), so ``pi plugins`` stays fast.

Modules, each with one job:

- :mod:`~openpi_backend_jax.layers`: dense layers, the matmul helper and the dtype rule.
- :mod:`~openpi_backend_jax.siglip`: the SigLIP vision tower and its head.
- :mod:`~openpi_backend_jax.gemma`: Gemma layers and the two-expert transformer.
- :mod:`~openpi_backend_jax.pi0`: the π0/π0.5 model, its sampler and loss.
- :mod:`~openpi_backend_jax.pi0_fast`: the π0-FAST model, its token decoder and loss.
- :mod:`~openpi_backend_jax.weights`: canonical parameter dict <-> module tree.
- :mod:`~openpi_backend_jax.backend` and :mod:`~openpi_backend_jax.plugin`: registration.
"""
