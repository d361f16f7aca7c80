"""Conformance checks against reference outputs of the official YOLOv7 implementation.

``forward``: model outputs (raw levels, decoded, NMS) on ``tiny_forward*.npz``-format files.
``loss``: assignment, loss and gradients on ``loss_ota.npz`` / ``loss_aux_ota.npz``-format files.
"""
