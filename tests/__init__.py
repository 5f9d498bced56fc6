"""The test suite; its folders mirror the source tree (bridge/, adapters/, bench/)."""
