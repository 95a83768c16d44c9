"""Everything that knows AWS: its client and error mapping, test instances, AMIs and their stages, usage for
retention, leftovers for the sweep. The only place boto3/botocore are imported."""
