"""Body modality: person-track silhouettes (for gait), pose keypoints and body-shape embeddings.

Submodules are imported where needed (`silhouettes`, `anthropometric`, `clip_student`), so that
importing the package loads neither MediaPipe nor torch.
"""
