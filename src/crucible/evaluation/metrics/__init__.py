"""Pure metric functions: FID/KID/PR (torch-fidelity), CLIP, controllability, colour, CAM alignment, speed and
metric validity, and the independent reference implementations the tests check them against."""
