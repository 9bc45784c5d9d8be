"""An example of a user's own package of mvae_jax plugins (``halves``); see mvae_jax/plugins.py."""
