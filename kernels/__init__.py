"""Triton kernels for VDSR (fused conv stack, MATLAB-exact resize); each has a PyTorch twin.

The folder is ``kernels/`` in the repository; it installs as the package ``vdsr_kernels``
(``pyproject.toml``: ``package-dir``), so that it never collides with another distribution's
top-level ``kernels`` (Hugging Face's, which ``transformers`` uses) in site-packages:

    from vdsr_kernels.conv import conv3x3
    from vdsr_kernels.stack import vdsr_forward
"""
