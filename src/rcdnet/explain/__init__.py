"""Heat maps (pytorch-grad-cam) on the model's own input, mapped back to the original image, and their agreement
with radiologists' lesion masks.

    cam.py        one class per method (Grad-CAM ... LayerCAM, and the centre prior) behind :class:`HeatMapper`
    images.py     read -> preprocess -> predict -> heat map -> picture, per image
    agreement.py  energy in mask, pointing game, top-k IoU, ROAD faithfulness
    table.py      the agreement table per dataset and method;  figure.py  the paper's Figure 4
    run.py        ``rcdnet explain``
"""
