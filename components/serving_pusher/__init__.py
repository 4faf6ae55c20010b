"""TFX's Pusher that does not push a model already serving as the newest version."""
