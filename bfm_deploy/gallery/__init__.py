"""1:N identification with balanced matching (``Gallery``) and its command-line tool, ``bfm-gallery``."""

from ..verifier import FaceFeatures as FaceFeatures
from .gallery import Candidate as Candidate
from .gallery import Gallery as Gallery
from .gallery import Identification as Identification
from .store import SqliteStore as SqliteStore
from .store import AlreadyEnrolled as AlreadyEnrolled
from .store import NotEnrolled as NotEnrolled
