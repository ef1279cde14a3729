# mmgenre dashboard: Streamlit (/) + Gradio (/gradio/) behind nginx on one port.
# Works as a Hugging Face Docker Space (README front matter: sdk: docker, app_port: 7860).
#   docker build -t mmgenre . && docker run -p 7860:7860 \
#       -v /path/to/mmimdb:/data:ro -e MMGENRE_DATA=/data mmgenre
# Trained checkpoints are copied from ./checkpoints (train them first: `make train`), or mount
# a folder and set MMGENRE_CHECKPOINTS. The data is never baked into the image.
FROM python:3.11-slim

# nginx: the one-origin proxy of dashboard/serve.py; libglib2.0-0: headless OpenCV.
RUN apt-get update \
    && apt-get install -y --no-install-recommends nginx libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    YOLO_OFFLINE=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    MMGENRE_LOCK_PATHS=1 \
    HOME=/home/user

# Spaces run the container as uid 1000 with a read-only app folder; serve.py keeps nginx's
# pid/logs/temp in a temp folder (tests/test_container.py runs this CMD that way).
RUN useradd -m -u 1000 user
WORKDIR /home/user/app

# torch first and pinned, so no other requirement can pull a different build: the CPU-only
# wheels from PyTorch's CPU index (a CPU Space; PyPI's default build bundles CUDA, ~5 GB).
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1
COPY requirements.txt requirements-nodeps.txt ./
RUN pip install -r requirements.txt \
    && pip install --no-deps -r requirements-nodeps.txt

COPY --chown=user . .
USER user
EXPOSE 7860
CMD ["python", "-m", "dashboard.serve", "--port", "7860"]
