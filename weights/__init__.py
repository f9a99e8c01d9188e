"""The shipped VDSR weights, installed as the package ``vdsr_weights`` (data only).

``vdsr.load_pretrained()`` finds ``vdsr20_x234.safetensors`` here, in a checkout and in an
installed wheel alike; ``weights/README.md`` says how the model was trained.
"""
