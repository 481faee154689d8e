"""Headers as MR scanners write them, for tests and benchmarks of per-element work.

A Siemens-like MR slice: about 150 elements (counting those inside sequences), ``ISO_IR 100``
names with accented letters, two CSA private blocks of about 2 KB each in OB (image and series
header, in the CSA2 layout with NUL-padded names and values), a ``SIEMENS MR HEADER`` block in
groups 0019 and 0051, and nested sequences (RequestAttributesSequence holding a code sequence,
ReferencedImageSequence, ProcedureCodeSequence, ReferencedPerformedProcedureStepSequence). The
patient's name is also in ImageComments, as operators type it. Thin synthetic headers hide the
cost and the corner cases of such headers; ``bench/corpora.py`` builds its corpus from these.
"""

from __future__ import annotations

import struct

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

# Names as an ISO_IR 100 scanner writes them: Latin-1 letters outside ASCII.
SCANNER_PATIENTS = (("Müller", "Jürgen"), ("Ødegård", "Åse"), ("Sánchez", "María José"),
                    ("Brønnum", "Søren"), ("Lefèvre", "Hélène"))  # fmt: skip
MR = "1.2.840.10008.5.1.4.1.1.4"
CT = "1.2.840.10008.5.1.4.1.1.2"
MR_SIZE = 256


def pixels(patient: int, n: int, size: int) -> bytes:
    """A smooth image plus noise: compresses about as well as a real slice."""
    rng = np.random.default_rng(patient * 100_000 + n)
    yy, xx = np.mgrid[0:size, 0:size]
    image = (1000 + 800 * np.sin(xx / 17 + n) * np.cos(yy / 23)).astype(np.uint16)
    image += rng.integers(0, 40, size=(size, size), dtype=np.uint16)
    return image.tobytes()


def file_meta(sop_class: str, sop: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop
    return meta


def csa2(entries: list[tuple[str, str, list[str]]], pad_to: int) -> bytes:
    """A Siemens CSA2 header: ``SV10`` signature, then per entry a 64-byte NUL-padded name, VM,
    VR, syngo data type, item count, and items of (length, 77, length, length) + padded data.
    Empty entries of the usual kind are added until the blob is at least ``pad_to`` bytes."""

    def entry(name: str, vr: str, values: list[str]) -> bytes:
        head = struct.pack("<64si4sii", name.encode(), len(values), vr.encode(), 0, len(values))
        out = bytearray(head + struct.pack("<i", 77))
        for value in values:
            data = value.encode("latin-1") + (b"\x00" if value else b"")
            out += struct.pack("<iiii", len(data), 77, len(data), len(data))
            out += data + b"\x00" * (-len(data) % 4)
        return bytes(out)

    body = [entry(*e) for e in entries]
    index = 0
    while sum(map(len, body)) + 16 < pad_to:
        body.append(entry(f"UnusedParameter{index:03d}", "IS", []))
        index += 1
    header = b"SV10\x04\x03\x02\x01" + struct.pack("<II", len(body), 77)
    return header + b"".join(body)


def _csa_image(n: int) -> bytes:
    return csa2(
        [
            ("EchoLinePosition", "IS", ["128"]),
            ("EchoColumnPosition", "IS", ["128"]),
            ("EchoPartitionPosition", "IS", ["32"]),
            ("UsedChannelMask", "UL", ["255"]),
            ("ICE_Dims", "LO", [f"X_1_1_1_1_1_{n}_1_1_1_1_1_1"]),
            ("B_value", "IS", ["0"]),
            ("ImaCoilString", "LO", ["HEA;HEP"]),
            ("SliceMeasurementDuration", "DS", ["105000.00000000"]),
            ("ImaRelTablePosition", "IS", ["0", "0", "0"]),
            ("RealDwellTime", "IS", ["7800"]),
            ("SequenceMask", "CS", ["SK"]),
            ("AcquisitionMatrixText", "SH", ["256p*256"]),
            ("MeasuredFourierLines", "IS", ["0"]),
            ("ImaAbsTablePosition", "SL", ["0", "0", "-1250"]),
            ("NonPlanarImage", "US", ["0"]),
            ("SliceNormalVector", "FD", ["0.0", "0.0", "1.0"]),
            ("SliceArea", "FD", ["62500.0"]),
        ],
        2048,
    )


def _csa_series() -> bytes:
    protocol = (
        '### ASCCONV BEGIN ###\nulVersion = 0x14b44b6\ntSequenceFileName = "%SiemensSeq%\\tse"\n'
        'tProtocolName = "t2_tse_tra"\nsKSpace.lBaseResolution = 256\n### ASCCONV END ###'
    )
    return csa2(
        [
            ("UsedPatientWeight", "IS", ["70"]),
            ("NumberOfPrescans", "IS", ["0"]),
            ("TransmitterCalibration", "DS", ["247.59"]),
            ("PhaseGradientAmplitude", "DS", ["0.0"]),
            ("ReadoutGradientAmplitude", "DS", ["0.0"]),
            ("SelectionGradientAmplitude", "DS", ["0.0"]),
            ("GradientDelayTime", "DS", ["36.0", "35.0", "31.0"]),
            ("RfWatchdogMask", "IS", ["0"]),
            ("RfPowerErrorIndicator", "DS", ["1.1"]),
            ("SarWholeBody", "DS", ["0.5", "0.5", "0.5"]),
            ("Sed", "DS", ["1000000.0", "1.2", "1.2"]),
            ("CoilForGradient", "SH", ["void"]),
            ("CoilForGradient2", "SH", ["AS092"]),
            ("CoilTuningReflection", "DS", ["0.0"]),
            ("MrPhoenixProtocol", "UN", [protocol]),
        ],
        2048,
    )


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _private_siemens(ds: Dataset, n: int) -> None:
    mr = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    mr.add_new(0x08, "CS", "IMAGE NUM 4")
    mr.add_new(0x09, "LO", "1.0")
    mr.add_new(0x0B, "DS", "7800")
    mr.add_new(0x0F, "SH", "Fast")
    mr.add_new(0x11, "SH", "No")
    mr.add_new(0x12, "SL", [0, 0, -1250])
    mr.add_new(0x13, "SL", [0, 0, -1250])
    mr.add_new(0x14, "IS", ["0", "0", "0"])
    mr.add_new(0x15, "FD", [0.0, 0.0, float(n)])
    mr.add_new(0x17, "DS", "1")
    mr.add_new(0x18, "IS", "7800")
    csa = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    ds.private_block(0x0029, "SIEMENS MEDCOM HEADER2", create=True)
    csa.add_new(0x08, "CS", "IMAGE NUM 4")
    csa.add_new(0x09, "LO", "20100114")
    csa.add_new(0x10, "OB", _csa_image(n))
    csa.add_new(0x18, "CS", "MR")
    csa.add_new(0x19, "LO", "20100114")
    csa.add_new(0x20, "OB", _csa_series())
    header = ds.private_block(0x0051, "SIEMENS MR HEADER", create=True)
    header.add_new(0x08, "CS", "IMAGE NUM 4")
    header.add_new(0x09, "LO", "1.0")
    header.add_new(0x0A, "LO", "TA 02:05")
    header.add_new(0x0B, "LO", "256p*256")
    header.add_new(0x0C, "LO", "FoV 230*230")
    header.add_new(0x0D, "SH", "SP F12.3")
    header.add_new(0x0E, "LO", "Tra")
    header.add_new(0x0F, "LO", "HEA;HEP")
    header.add_new(0x11, "LO", "p2")
    header.add_new(0x12, "SH", "TP 0")
    header.add_new(0x13, "SH", "+LPH")
    header.add_new(0x16, "LO", "p2 M/ND/NORM")
    header.add_new(0x17, "SH", "SL 5.0")
    header.add_new(0x19, "LO", "A1/PFP/SB")


def scanner_slice(patient: int, study_uid: str, series_uid: str, n: int, modality: str) -> Dataset:
    """An MR slice with a header as a Siemens scanner writes it (about 150 elements)."""
    family, given = SCANNER_PATIENTS[patient % len(SCANNER_PATIENTS)]
    sop = generate_uid()
    ds = Dataset()
    ds.file_meta = file_meta(MR, sop)
    ds.file_meta.ImplementationVersionName = "SIEMENS_VE11C"
    ds.file_meta.SourceApplicationEntityTitle = "MRC40711"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D"]
    ds.InstanceCreationDate = "20250114"
    ds.InstanceCreationTime = f"1016{n % 60:02d}.343000"
    ds.SOPClassUID = MR
    ds.SOPInstanceUID = sop
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20250114"
    ds.StudyTime = "100843.218000"
    ds.SeriesTime = "101559.437000"
    ds.AcquisitionTime = "101201.547500"
    ds.ContentTime = f"1016{n % 60:02d}.343000"
    ds.AccessionNumber = f"A{patient:04d}7731"
    ds.Modality = "MR"
    ds.Manufacturer = "SIEMENS"
    ds.InstitutionName = "Universitätsklinikum Nord"
    ds.InstitutionAddress = "Lindenstraße 3,Hamburg,DE,20095"
    ds.ReferringPhysicianName = "Schäfer^Björn^^Dr."
    ds.StationName = "MRC40711"
    ds.StudyDescription = "Kopf^Routine"
    ds.ProcedureCodeSequence = Sequence([_code_item("MRKOPF", "99ORBIS", "MRT Schädel")])
    ds.SeriesDescription = "t2_tse_tra"
    ds.InstitutionalDepartmentName = "Radiologie"
    ds.PerformingPhysicianName = "Åström^Märta"
    ds.OperatorsName = "Kühn^Renée"
    ds.ManufacturerModelName = "Skyra"
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.3"
    referenced.ReferencedSOPInstanceUID = generate_uid(entropy_srcs=[study_uid, "mpps"])
    ds.ReferencedPerformedProcedureStepSequence = Sequence([referenced])
    images = []
    for k in range(3):
        item = Dataset()
        item.ReferencedSOPClassUID = MR
        item.ReferencedSOPInstanceUID = generate_uid(entropy_srcs=[study_uid, "loc", str(k)])
        images.append(item)
    ds.ReferencedImageSequence = Sequence(images)
    _private_siemens(ds, n)
    ds.PatientName = f"{family}^{given}"
    ds.PatientID = f"{patient:04d}81723"
    ds.IssuerOfPatientID = "KLINIKUM"
    ds.PatientBirthDate = f"19{50 + patient:02d}0{1 + patient % 9}12"
    ds.PatientSex = "F" if patient % 2 else "M"
    ds.PatientAge = f"0{70 - patient:02d}Y"
    ds.PatientSize = "1.78"
    ds.PatientWeight = "72"
    ds.BodyPartExamined = "HEAD"
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = ["SK", "SP", "OSP"]
    ds.ScanOptions = ["PFP", "SAT1"]
    ds.MRAcquisitionType = "2D"
    ds.SequenceName = "*tse2d1_13"
    ds.AngioFlag = "N"
    ds.SliceThickness = "5"
    ds.RepetitionTime = "6000"
    ds.EchoTime = "95"
    ds.NumberOfAverages = "1"
    ds.ImagingFrequency = "123.251554"
    ds.ImagedNucleus = "1H"
    ds.EchoNumbers = "1"
    ds.MagneticFieldStrength = "3"
    ds.SpacingBetweenSlices = "6"
    ds.NumberOfPhaseEncodingSteps = "250"
    ds.EchoTrainLength = "13"
    ds.PercentSampling = "100"
    ds.PercentPhaseFieldOfView = "81.25"
    ds.PixelBandwidth = "220"
    ds.DeviceSerialNumber = "40711"
    ds.SoftwareVersions = "syngo MR E11"
    ds.ProtocolName = "t2_tse_tra"
    ds.TransmitCoilName = "Body"
    ds.AcquisitionMatrix = [0, 256, 208, 0]
    ds.InPlanePhaseEncodingDirection = "ROW"
    ds.FlipAngle = "150"
    ds.VariableFlipAngleFlag = "N"
    ds.SAR = "0.49"
    ds.dBdt = "0"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = int(series_uid[-1]) % 9 + 1
    ds.AcquisitionNumber = "1"
    ds.InstanceNumber = n
    ds.ImagePositionPatient = ["-115", "-127.5", f"{-60 + 6 * n}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[study_uid, "frame"])
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = f"{-60 + 6 * n}"
    ds.ImageComments = f"Kontrolle nach OP, {given} {family}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = MR_SIZE
    ds.PixelSpacing = ["0.8984375", "0.8984375"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.SmallestImagePixelValue = 0
    ds.LargestImagePixelValue = 1839
    ds.WindowCenter = "579"
    ds.WindowWidth = "1159"
    ds.WindowCenterWidthExplanation = "Algo1"
    ds.RequestingPhysician = "Schäfer^Björn"
    ds.RequestedProcedureDescription = "MRT Schädel"
    ds.PerformedProcedureStepStartDate = "20250114"
    ds.PerformedProcedureStepStartTime = "100843.250000"
    ds.PerformedProcedureStepID = f"PPS{patient:05d}"
    ds.PerformedProcedureStepDescription = "Kopf^Routine"
    request = Dataset()
    request.RequestedProcedureID = f"RP{patient:05d}"
    request.ScheduledProcedureStepDescription = "MRT Schädel nativ"
    request.ScheduledProcedureStepID = f"SPS{patient:05d}"
    request.ScheduledProtocolCodeSequence = Sequence(
        [_code_item("MRKOPF", "99ORBIS", "MRT Schädel")]
    )
    ds.RequestAttributesSequence = Sequence([request])
    ds.PixelData = pixels(patient, n, MR_SIZE)
    return ds
