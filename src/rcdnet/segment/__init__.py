"""The lesion finder: a U-Net that outlines lesions on the whole image, so that an image alone gets an answer.

    model      build_segmenter (segmentation_models_pytorch U-Net on ImageNet EfficientNet-Lite0), its checkpoint
    lesions    Lesion: one found region's outline, box, area, longest diameter and its perpendicular (mm or px)
    finder     LesionFinder: (H, W, 3) image -> Finding (the lesions above the validation-chosen confidence)
    data       the images with lesion masks (and normal images) as (S, S) arrays, on the run's split
    train      train_segmenter and its "lesion found" threshold (`rcdnet train` runs it after the classifier)

How well it finds lesions (detection rate, Dice, "no lesion" on normal images, found-box vs given-box AUC):
:mod:`rcdnet.evaluation.finder`. Which box a model classifies: :mod:`rcdnet.predict.regions`.
"""
