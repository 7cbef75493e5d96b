"""The OpenAI fine-tuning API, self-hosted: routers (files, jobs, events, checkpoints, graders)
that `tuneloop serve` mounts on the same app as the inference routes. An edge, like cli/ and
sdk/: it calls the services; `auth.request_project` says which project a request belongs to."""
