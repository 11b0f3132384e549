"""The Data Import Tool: records from a CSV in REDCap's flat format, imported from the browser."""
