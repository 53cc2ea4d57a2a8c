import com.pixelmed.validate.DicomSRValidator;

/** Validates many SR files in one JVM (PixelMed's own main takes one file and ~15 s to start). */
public class PixelmedSRBatch {
    public static void main(String[] args) throws Exception {
        DicomSRValidator validator = new DicomSRValidator();
        for (String file : args) {
            System.out.println("=== FILE " + file);
            try {
                System.out.print(validator.validate(file));
            } catch (Exception e) {
                System.out.println("Error: validator failed: " + e);
            }
            System.out.println("=== END");
        }
    }
}
