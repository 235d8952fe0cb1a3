"""Slack talking back: button clicks on incident messages and the /inkwave command.

Here, in monitoring, because they act on incidents; the checks of Slack's requests and the
transport live below, in notifications (slack_requests.py, slack.py).
"""
