"""The OpenAI fine-tuning flow on your own hardware: files → jobs → events → checkpoints → the fine-tuned model.

``store`` keeps everything in SQLite, ``files`` the uploaded bytes, ``service`` the jobs as the API
describes them, ``runner`` trains them in worker processes, ``client`` drives any such service
through the official ``openai`` SDK. ``tailored serve`` exposes it under ``/v1``.
"""
