"""Adapters: other people's models speaking the model protocol ``eps_hat(x_t, t)`` (with ``predict``),
through diffusers and transformers.

    sd         Stable Diffusion: CFG UNet (``GuidedUNet``), the reward on the decoded image, real weights or
               the tiny offline pipeline in ``data/tiny_sd``; ``run_method`` runs any method of the table
    flux       FLUX (rectified flow, packed latents): ``FluxVelocity`` + ``schedules.VelocityModel``
    aesthetic  the LAION aesthetic predictor (CLIP ViT-L/14 + the shipped MLP head), differentiable
    hub        weights from the hub, or a clear ``WeightsNotFoundError`` and the offline fallback

Nothing here is imported by the core; the worlds and studies import what they need.
"""
