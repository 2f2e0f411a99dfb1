"""The model gateway: an HTTP proxy between agent CLIs and model providers that meters and classifies."""
