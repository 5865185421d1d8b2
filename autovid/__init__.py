"""autovid: differentiable architecture search for video action recognition, orchestrated by Ray Tune."""

__version__ = "0.1.0"
