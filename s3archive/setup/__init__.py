"""Setting s3archive up: the bucket and IAM (``create-resources``) and the host
(``write-config``: configuration, credentials, pickers, snapshotters, systemd).

``spec`` holds what the operator asked for, ``policies`` the policy documents,
``cloudformation`` and ``bucket_setup``/``iam_setup`` the two ways to create
them, ``bucket_check`` reads the bucket back and reports every difference.
"""
