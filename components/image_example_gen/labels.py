"""How a file's class is read from its folder and its name: the component's label parameters."""
import dataclasses
import re
from typing import Optional, Tuple

from petpark.components.image_example_gen.rejections import FileRejected

# Kaggle "Dogs vs. Cats" names: cat.123.jpg
KAGGLE_FILE_NAME_PATTERN = r'^(?P<label>[A-Za-z]+)\.\d+\.[A-Za-z0-9]+$'


@dataclasses.dataclass(frozen=True)
class LabelRule:
    """Reads a class from `<class folder>/...` (the first folder under the image root) and from
    file names matching `file_name_pattern` (its `label` group; '' reads folders only).

    Folder names match class names case-insensitively and in the plural ('Cats/' is 'cat'); a
    folder that names no class keeps its name, so the curated schema reports it as an unknown
    label. A file name counts only when it names a class. Folder, name and metadata label
    must agree, or the file is rejected as `label_mismatch`.
    """
    class_names: Tuple[str, ...]
    file_name_pattern: str = KAGGLE_FILE_NAME_PATTERN

    def __post_init__(self):
        names = tuple(self.class_names)
        object.__setattr__(self, 'class_names', names)
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(f'class_names needs two or more distinct names, got {list(names)}')
        bad = [n for n in names if not isinstance(n, str) or n != n.strip().lower() or not n]
        if bad:
            raise ValueError(f'class_names must be lower-case names without surrounding spaces, got {bad}')
        if self.file_name_pattern:
            try:
                pattern = re.compile(self.file_name_pattern)
            except re.error as e:
                raise ValueError(f'file_name_pattern {self.file_name_pattern!r} is not a regular expression: {e}') from None
            if 'label' not in pattern.groupindex:
                raise ValueError(f'file_name_pattern {self.file_name_pattern!r} needs a (?P<label>...) group')

    def normalize(self, name: str) -> str:
        """'Cats' -> 'cat'; a name that is no class, singular or plural, stays as given (lower case)."""
        name = name.strip().lower()
        if name.endswith('s') and name[:-1] in self.class_names:
            return name[:-1]
        return name

    def _from_file_name(self, file_name: str) -> Optional[str]:
        match = re.match(self.file_name_pattern, file_name) if self.file_name_pattern else None
        label = self.normalize(match.group('label')) if match else None
        return label if label in self.class_names else None

    def from_path(self, relative_path: str) -> Optional[str]:
        """The class a path says, from its name or else its class folder; None when neither says one."""
        parts = relative_path.split('/')
        from_name = self._from_file_name(parts[-1])
        from_folder = self.normalize(parts[0]) if len(parts) > 1 else None
        if from_name and from_folder in self.class_names and from_folder != from_name:
            raise FileRejected('label_mismatch', f'the folder says {from_folder!r}, the file name says {from_name!r}')
        return from_name or from_folder

    def resolve(self, relative_path: str, metadata_label: Optional[str], metadata_file: str) -> str:
        """The label of a file, its path and its metadata row agreeing; raises FileRejected otherwise."""
        from_path = self.from_path(relative_path)
        from_metadata = self.normalize(metadata_label or '') or None
        if from_path and from_metadata and from_path != from_metadata:
            raise FileRejected('label_mismatch', f'folder/name says {from_path!r}, {metadata_file} says {from_metadata!r}')
        label = from_path or from_metadata
        if not label:
            raise FileRejected('no_label', 'no class folder, class file name or metadata label')
        return label

