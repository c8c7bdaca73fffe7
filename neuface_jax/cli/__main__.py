"""``python -m neuface_jax.cli <command>``: the same as the ``neuface-jax`` console script."""

from neuface_jax.cli import run

if __name__ == "__main__":
    run()
