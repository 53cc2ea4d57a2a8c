#!/usr/bin/env bash
# The Debian/Ubuntu packages the tests use (root or sudo; once per machine). The demo
# (scripts/demo.sh) needs none of them; without them the tests that need them skip with
# a reason, and under CI (CHEXDCM_REQUIRE_SHARED=1) they fail instead.
#   dcmtk                 dcmj2pnm, storescu/storescp (reference renderer, DICOM peers)
#   dicom3tools           dciodvfy (IOD validation of every output)
#   libgdcm-tools         gdcmconv (an independent decoder of compressed pixel data)
#   pixelmed-apps         PixelMed's DicomSRValidator (the IHE AI Results SR checks)
#   default-jdk-headless  runs the validator over many SRs in one JVM (tests/helpers/PixelmedSRBatch.java)
#   orthanc               a real PACS for the sender and node tests (its own config and ports per test)
#   orthanc-dicomweb      Orthanc's DICOMweb plugin (STOW-RS destination)
#   orthanc-webviewer     Orthanc's Web Viewer plugin (how a radiologist sees the results; screenshots)
#   openssl               makes the certificates of the TLS tests
#   chromium              headless screenshots of the evaluation report (report.html) for review
set -euo pipefail
PACKAGES=(dcmtk dicom3tools libgdcm-tools pixelmed-apps default-jdk-headless orthanc orthanc-dicomweb orthanc-webviewer openssl chromium)
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
echo "installed: ${PACKAGES[*]}"
