"""What operators watch: CloudWatch metrics in log lines, and Prefect automations for alerting."""
