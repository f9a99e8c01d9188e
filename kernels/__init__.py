"""Triton kernels for VDSR (fused conv stack, MATLAB-exact resize); each has a PyTorch twin."""
