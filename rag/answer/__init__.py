"""From a question to an Answer: retrieve, translate, prompt, read, cite, compose, judge."""
