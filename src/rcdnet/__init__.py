"""rcdnet: benign vs malignant breast-ultrasound classification (the RcdNet paper, reproduced).

Sub-packages follow an image from disk to a diagnosis and a heat map:

    data        read a file (image, DICOM, video), screen duplicates, split, preprocess to an (S, S) uint8 image
    models      RcdNet and the baselines; ``models.input``: the one definition of the model's input and decision
    training    the loop, atomic checkpoints (read without unpickling code), DDP
    evaluation  metrics with CIs, operating points chosen on validation, reports, the shift suite
    predict     any trained model (checkpoint, fold ensemble, ONNX) behind one ``Predictor`` interface
    explain     heat maps and their agreement with lesion masks
    deploy      ONNX export and INT8 quantisation
    serve       the HTTP service and the clinician's page

``config`` holds the typed run settings, ``pipeline`` the main job (train -> calibrate -> evaluate -> report),
``crossval`` and ``benchmark`` run many of them, and ``cli`` is the command line.
"""

__version__ = "0.1.0"
