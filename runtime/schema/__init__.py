"""The application as data (pure): the ``AppSpec``, logical types, typed change operations with
``apply``/``validate``, and the structural diff between two specs. Never touches a database."""
