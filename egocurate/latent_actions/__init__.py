"""egocurate.latent_actions"""
