"""salinet_jax: SaliNet and S2DNet video classification in JAX/Flax."""
