"""The report: reads a sweep's typed records and writes its page, tables and figures. Torch-free."""
