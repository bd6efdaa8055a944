"""The same pipeline on AWS's engines (issue 15), each behind one config switch:

  catalog.engine=athena      catalog registers the S3 lake in Glue; explore / `query --engine athena` run on Athena
  bert.launcher=sagemaker    the bert stage runs as a SageMaker training job (train_entry.py in a PyTorch DLC)
  predict --engine sagemaker Batch Transform on the packaged model
  register.sagemaker=true    every registry version mirrored into a SageMaker Model Package Group

Credentials come only from the standard AWS chain; the `aws` params section holds region, profile and
endpoint (never keys).
"""
