"""bfm-serve's endpoints, one ``APIRouter`` per group: ``verify`` (verify, verify/batch, embed), ``gallery`` (the
/v1/gallery/ endpoints) and ``health`` (healthz, readyz, metrics). Each route reads what it shares with the others
from the ``Service`` dependency (``bfm_deploy.serve.state``)."""
