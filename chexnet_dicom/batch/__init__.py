"""Batch retrospective runs over PACS exports: discovery, the resumable runner, result tables."""
