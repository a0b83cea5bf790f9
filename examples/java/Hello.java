// Single-file Java program (JEP 330), run by lre_java_run without compilation.
public class Hello {
  static String greeting(String name) {
    return "Hello from " + name + "!";
  }

  public static void main(String[] args) {
    if (args.length == 1 && args[0].equals("--self-test")) {
      String got = greeting("LRE");
      if (!got.equals("Hello from LRE!")) {
        System.err.println("FAIL: got '" + got + "'");
        System.exit(1);
      }
      System.out.println("Hello self-test passed on Java " + System.getProperty("java.version"));
      return;
    }
    System.out.println(greeting(args.length > 0 ? args[0] : "LRE (Java " + System.getProperty("java.version") + ")"));
  }
}
