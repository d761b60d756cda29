"""The blinded reader study of pruning-identified exemplars (Holste et al., MICCAI 2023).

``sample`` draws a seeded, balanced, blinded set of PIEs and non-PIEs per reader form;
``page`` renders each form as one self-contained HTML page; readers' exports are read and
validated by ``answers``; ``simulate`` stands in for radiologists on the synthetic data;
``stats`` and ``figure`` compare PIEs with non-PIEs per question, per reader and pooled.
"""

